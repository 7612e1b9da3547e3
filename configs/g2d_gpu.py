"""G2D on one GPU: the packaged recipe (alignment jitter, WiSE-FT 0.7, camera degradations; configs/g2d_cpu_camera.py),
longer stages and bigger batches (relation KD likes big batches). Not run yet (no session has had a GPU): on
the CPU, classifier stages past 2 epochs learnt the training identities (benchmarks/RESULTS.md, run 11), so
watch the classifier's cross-entropy and the test pairs before trusting these lengths.
"""
config = dict(
    name="g2d_gpu",
    seed=0,
    train_lfw_folds=[1, 2, 3, 4, 5],
    use_celeba=True,
    batch_size=256,
    p_mask=0.75,
    generative_pretraining=True,
    center_teacher=True,
    stages=dict(
        inpaint=dict(epochs=20, lr_encoder=1e-5, lr_new=2e-4, lr_decoder=1e-3, hole_weight=5.0, max_steps=None, warmup_steps=100),
        reformer=dict(epochs=30, lr_encoder=1e-5, lr_reformer=3e-5, tau=0.1, w_relation=1.0, w_instance=1.0,
                      max_steps=None, warmup_steps=200),
        classifier=dict(epochs=10, lr_head=1e-2, lr_reformer=1e-5, margin=0.2, scale=30.0, w_kd=1.0,
                        max_steps=None, warmup_steps=100),
    ),
    align_jitter=dict(p=0.7, rot_deg=5.0, scale=0.06, shift_px=3.0),  # as configs/g2d_cpu_jitter.py
    degrade=dict(p=0.4, min_scale=0.25, p_blur=0.3, max_blur_px=7.0, p_jpeg=0.5, jpeg_quality=(30, 90)),
    wise_alpha=0.7,
    device="cuda",
    threads=16,
    workers=8,
)
