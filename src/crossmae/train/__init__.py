"""Training: the pretraining engine and the generic pieces fine-tuning and probing reuse.

Generic: `schedule` (warmup + cosine, lr scaling), `optim` (AdamW groups, non-finite skip),
`step` (accumulation, clipping, mixed precision), `precision`, `distributed` (torchrun),
`checkpointing` (atomic, resumable), `logging` (JSON lines, TensorBoard, progress),
`signals` (stop cleanly on SIGTERM), `options` (dataclass settings from YAML and flags).
Pretraining: `config`, `batches`, `data`, `monitor`, `online_knn`, `pretrain`.
"""
