"""Data: the datasets' readers (CIFAR-10 batches, image folders and zips) and downloads into the
cache. May import the contracts and engine.io only."""
