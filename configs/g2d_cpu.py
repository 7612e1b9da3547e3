"""G2D on a 2-core CPU: short stages, all data, dlib-initialised student.

About 10 minutes of training here, after the one-off aligned-face and teacher caches (about 10 more).
"""
config = dict(
    name="g2d_cpu",
    seed=0,
    train_lfw_folds=[1, 2, 3, 4, 5],  # people.txt folds used for training; pairs of folds 6-10 are the test
    use_celeba=True,
    batch_size=64,
    p_mask=0.75,  # share of training samples that get a fresh synthetic mask
    p_template=0.5,  # share of those masks drawn from MaskTheFace templates (needs --masks), the rest procedural
    p_below_nose=0.0,  # share of them worn below the nose (nose bare)
    p_scarf=0.0,  # share of the occluders that are scarves, gaiters or bandanas instead of masks
    generative_pretraining=True,  # False = the paper's ablation (no inpainting stage)
    center_teacher=True,  # centre dlib's narrow cone of embeddings (student and targets alike)
    # small rates + warm-up: the student starts as (centred) dlib, and big early steps only undo that
    stages=dict(
        inpaint=dict(epochs=1, lr_encoder=1e-5, lr_new=2e-4, lr_decoder=1e-3, hole_weight=5.0, max_steps=90,
                     warmup_steps=10),  # lr_new: the dilated blocks; lr_encoder: dlib's layers
        reformer=dict(epochs=1, lr_encoder=1e-5, lr_reformer=3e-5, tau=0.1, w_relation=1.0, w_instance=1.0,
                      max_steps=140, warmup_steps=20),
        classifier=dict(epochs=1, lr_head=1e-2, lr_reformer=1e-5, margin=0.2, scale=30.0, w_kd=1.0, max_steps=60,
                        warmup_steps=10),
    ),
    threads=2,
    workers=1,
)
