"""Training: the run itself, the SFTTrainer subclass, models, callbacks, patches, data and PEFT checks."""
