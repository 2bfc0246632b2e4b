"""Training: the pretraining engine and the generic pieces fine-tuning and probing reuse.

Shared with eval/: `step` (one update: accumulation, clipping, mixed precision, non-finite
skip), `schedule` (warmup + cosine, lr scaling), `optim` (AdamW groups), `precision`,
`distributed` (torchrun), `checkpointing` (atomic, resumable), `logging` (JSON lines,
TensorBoard, progress), `signals` (stop cleanly on SIGTERM), `options` (dataclass
settings from YAML and flags).
Pretraining: `config`, `run_folder` (resume point and its checks, run folders), `batches`,
`data`, `meters` (the log line's device sums), `monitor`, `online_knn`, `pretrain`.
"""
