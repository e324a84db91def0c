"""Networks: EDM's (edm/, with the safe checkpoint loader), the toy MLP and small UNet, LoRA
adapters, discriminators and denoiser training. May import the contracts and engine.io only."""
