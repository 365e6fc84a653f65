"""Defaults shared by every experiment; each experiment copies this and changes what it needs.

Conventions: `*_every_steps` = -1 means once per epoch, 0 means only at the end.
"""

import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    # What is learned (cnnjax/tasks): classification | localization | segmentation.
    c.task = "classification"

    # model.name picks the registered model; every other key under model is passed to it.
    c.model = ml_collections.ConfigDict({"name": "lenet5"})

    c.data = ml_collections.ConfigDict()
    c.data.name = "digits"
    c.data.data_dir = ""  # "" -> $TFDS_DATA_DIR, then TFDS's default (~/tensorflow_datasets).
    c.data.image_size = 0  # > 0 resizes every image to image_size x image_size once on load.
    c.data.train_split = "train"  # TFDS split strings; slices like "train[:90%]" work.
    c.data.test_split = "test"
    c.data.download = False  # TFDS: prepare the dataset if missing (needs cnnjax[prepare]).
    # Generated sources (synthetic, shapes): examples per split; 0 keeps the source's default.
    c.data.num_train = 0
    c.data.num_test = 0
    # `synthetic` (random tensors for benchmarks): channels and classes; data.image_size sets
    # the side (32 when 0).
    c.data.synthetic = ml_collections.ConfigDict({"channels": 3, "num_classes": 10})
    c.data.feeding = "auto"  # device (upload once) | stream (grain, host decode) | auto.
    # Input preprocessing (cnnjax/data/preprocessing.py): dataset (its own mean/std) |
    # inception ([-1, 1]: Xception, MobileNet) | caffe (minus the ImageNet mean pixel: Keras'
    # ResNet/VGG weights) | imagenet (torchvision's ImageNet mean/std).
    c.data.normalization = "dataset"
    # A run records the classes and normalization it was trained on (WORKDIR/data.json); a
    # resume, eval or picture whose data differs stops and names the change. True: use the
    # data as it is now anyway (today's class names by position, the recorded normalization).
    c.data.accept_changes = False

    c.augment = ml_collections.ConfigDict()
    c.augment.crop_padding = 0  # Pad-and-random-crop by this many pixels (0: off).
    c.augment.crop_mode = "constant"  # "constant" (zeros) or "reflect".
    c.augment.flip = False  # Random horizontal flip.
    c.augment.cutout = 0  # Side of a random square set to the mean (0: off; DeVries & Taylor).
    c.augment.inception_crop = False  # Streaming only: random-resized crop to data.image_size.
    # Flip test-time augmentation: evaluate each test image and its mirror image and average
    # the class probabilities (classification).
    c.augment.test_flip = False

    c.batch_size = 128
    c.eval_batch_size = 0  # 0 -> batch_size.
    c.num_epochs = 10.0
    c.num_train_steps = -1  # > 0 overrides num_epochs.

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "sgd"  # sgd | adam | adamw | rmsprop
    c.optim.lr = 0.1
    c.optim.momentum = 0.9
    c.optim.nesterov = False
    c.optim.weight_decay = 0.0
    c.optim.weight_decay_mask = "kernels"  # "kernels" (no biases or norm params) or "all".
    c.optim.decoupled_weight_decay = False  # adamw is always decoupled.
    c.optim.grad_clip_norm = 0.0  # > 0 clips the global gradient norm.
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.rms_decay = 0.9

    c.schedule = ml_collections.ConfigDict()
    c.schedule.name = "cosine"  # constant | piecewise | cosine | onecycle
    c.schedule.warmup_steps = 0
    c.schedule.warmup_epochs = 0.0  # Added to warmup_steps.
    c.schedule.end_lr_factor = 0.0  # cosine: final lr = lr * end_lr_factor.
    c.schedule.boundaries = (0.5, 0.75)  # piecewise: fractions of the run ...
    c.schedule.decay_factor = 0.1  # ... where lr is multiplied by this.
    c.schedule.pct_start = 0.25  # onecycle: fraction of the run spent rising.
    c.schedule.div_factor = 25.0  # onecycle: initial lr = lr / div_factor.
    c.schedule.final_div_factor = 1e4  # onecycle: final lr = initial lr / final_div_factor.

    c.label_smoothing = 0.0
    c.dtype = "auto"  # auto (bfloat16 on GPU/TPU, float32 on CPU) | float32 | bfloat16
    # GPU: deterministic kernels (XLA's --xla_gpu_deterministic_ops), so a resumed or repeated
    # run is bit-identical there too, at some speed cost. CPU and TPU runs already are.
    c.deterministic = False
    # XLA:CPU's YNNPACK library fusions this run may use, comma-separated kinds of "dot",
    # "eltwise", "reduce", "individual_dot", "individual_convolution"; "" none, "default"
    # jaxlib's own choice. launch.py sets it before JAX starts (cnnjax.runtime; its
    # --xla_cpu_tuning=false or the flag in XLA_FLAGS leave jaxlib's default). No effect off CPU.
    c.xla_cpu_ynn_fusions = ""

    # Training steps per device call (Keras' steps_per_execution): k > 1 runs k steps in one
    # jitted lax.scan, so small models are not held back by the host's per-call cost. Log,
    # eval, checkpoint and epoch boundaries still fall on their exact steps.
    c.steps_per_execution = 1
    c.log_every_steps = 50
    c.eval_every_steps = -1
    c.checkpoint_every_steps = -1
    c.keep_checkpoints = 2
    c.best_metric = "accuracy"  # The eval metric that picks the "best" checkpoint.

    # Resuming a run whose optimizer settings changed (optim.*, transfer.finetune_optim):
    # fresh_optimizer=True keeps the checkpoint's parameters, statistics and step and starts a
    # fresh optimizer state, where the saved one does not fit; without it that is exit 2.
    c.resume = ml_collections.ConfigDict()
    c.resume.fresh_optimizer = False

    # Initialization from another run or from Keras weights (cnnjax.train.transfer).
    c.init = ml_collections.ConfigDict()
    c.init.checkpoint = ""  # A run dir, its checkpoints/ dir or one step dir.
    c.init.keras_weights = ""  # A Keras applications .h5 / .keras file.
    c.init.skip_pattern = r"^(head|predictions|conv_preds)(/|$)"  # Left freshly initialized.

    # Freezing and two-phase fine-tuning (fastai's fine_tune): phase 1 trains with the
    # parameters matching freeze_pattern frozen for freeze_steps (or freeze_epochs); phase 2
    # trains everything at finetune_lr with its own schedule and a fresh optimizer state.
    c.transfer = ml_collections.ConfigDict()
    c.transfer.freeze_pattern = ""  # Regex on "/"-joined parameter paths; "" = nothing frozen.
    c.transfer.freeze_steps = 0
    c.transfer.freeze_epochs = 0.0
    c.transfer.finetune_lr = 0.0
    # Phase 2 optimizer = optim.* updated with these keys (any key of optim except lr, which
    # is finetune_lr), e.g. --config.transfer.finetune_optim.nesterov=true.
    c.transfer.finetune_optim = ml_collections.ConfigDict()

    # task="localization" (cnnjax/tasks/localization.py): loss = class_weight x cross-entropy
    # + box_weight x box loss ("mse" or "smooth_l1" with smooth_l1_beta, on normalized boxes).
    c.localization = ml_collections.ConfigDict()
    c.localization.class_weight = 0.8
    c.localization.box_weight = 0.2
    c.localization.box_loss = "mse"
    c.localization.smooth_l1_beta = 0.05
    c.localization.hidden = 128  # Hidden ReLU layer of the head (0: none).
    c.localization.pool = "flatten"  # Deepest feature map: "flatten" (keeps where) or "avg".

    # task="segmentation" (cnnjax/tasks/segmentation.py): per-pixel cross-entropy.
    c.segmentation = ml_collections.ConfigDict()
    c.segmentation.ignore_label = 255  # Mask value left out of loss and metrics.
    c.segmentation.class_weights = ()  # Per-class loss weights, one per class; () = all 1.

    # task="detection" (cnnjax/tasks/detection.py): per grid cell objectness BCE + class CE +
    # L1 on (centre offsets, log sizes), per image / its number of objects; NMS; VOC mAP.
    c.detection = ml_collections.ConfigDict()
    c.detection.objectness_weight = 1.0
    c.detection.class_weight = 1.0
    c.detection.box_weight = 5.0
    c.detection.nms_iou_threshold = 0.5  # NMS removes boxes overlapping a kept one by more.
    c.detection.score_threshold = 0.01  # Detections at or below this score are dropped.
    c.detection.max_detections = 20  # Per image, after NMS (fixed size: jittable).
    c.detection.class_agnostic_nms = False  # False: boxes of different classes never compete.
    c.detection.map_iou_threshold = 0.5  # IoU for a true positive (mAP@0.5).

    c.viz = ml_collections.ConfigDict()  # --mode=visualize
    c.viz.layers = (
        ""  # Feature-map layers, comma-separated module paths ("" = last conv per block).
    )
    c.viz.filter_layer = ""  # Conv kernel path for the filter pictures ("" = the first layer).
    c.viz.gradcam_layer = ""  # Grad-CAM layer ("" = the last conv stage).
    c.viz.num_images = 6  # Test images in the Grad-CAM picture.
    c.viz.num_mistakes = 16
    c.viz.sample_index = 0  # The test image for feature maps and classic kernels.
    c.viz.max_eval_images = 2000  # Test images predicted for the confusion matrix and mistakes.
    c.viz.dir = ""  # Where the pictures go ("" = <workdir>/plots); for a read-only run.

    c.export = ml_collections.ConfigDict()  # --mode=export (docs/export.md)
    c.export.formats = "stablehlo,onnx"  # Comma-separated; onnx needs pip install -e '.[export]'.
    c.export.checkpoint = "best"  # best (by best_metric; else the latest) or latest.
    c.export.dir = ""  # "" = <workdir>/export.

    c.benchmark = ml_collections.ConfigDict()  # --mode=benchmark
    c.benchmark.steps = 20  # Timed steps, after ...
    c.benchmark.warmup = 3  # ... this many untimed ones.
    # Then the real training loop for this many steps on the experiment's data (0: skip).
    c.benchmark.loop_steps = 20
    # Peak TFLOP/s of one device for MFU; 0: cnnjax.modes.benchmark's bf16 table (none for CPUs).
    c.benchmark.peak_tflops = 0.0
    return c
