"""Weight import: `cnnjax.interop.keras` reads Keras applications models and weight files."""
