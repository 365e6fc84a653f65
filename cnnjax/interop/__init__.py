"""Weight import and export: `cnnjax.interop.keras` reads Keras applications weights."""
