"""Training: the pretraining engine and the generic pieces fine-tuning and probing reuse.

Shared with eval/: `schedule` (warmup + cosine, lr scaling), `optim` (AdamW groups,
non-finite skip), `precision`, `distributed` (torchrun), `checkpointing` (atomic,
resumable), `logging` (JSON lines, TensorBoard, progress), `signals` (stop cleanly on
SIGTERM), `options` (dataclass settings from YAML and flags).
Pretraining: `config`, `run_folder` (resume point, run folders), `batches`, `data`, `step`
(accumulation, clipping, mixed precision), `monitor`, `online_knn`, `pretrain`.
"""
