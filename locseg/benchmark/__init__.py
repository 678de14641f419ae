"""The benchmark behind ``python -m locseg.bench``: does locseg cost its users speed?

The machines this runs on are shared and noisy, so every comparison is a ratio of two measurements
interleaved in the same run (A, B, A, B, ...) and summarised by the median of the pairwise ratios;
the absolute figures stand beside the ratios for context only. One module per section:

1. ``training``: images/s through the LightningModules + ``pl.Trainer`` vs a bare PyTorch loop
   over the same model, DataLoader, batch and optimizer, epoch by epoch in one fit (target
   >= 0.95; the first, warm-up epoch of each excluded), beside Lightning's fixed per-step cost
   measured on a trivial model in the same run;
2. ``data``: DataLoader images/s (cached preprocessing + augmentation, the DataModule's default
   workers) vs training-step images/s (target >= 5: the loader is never the bottleneck), and
3. preprocessing: first run (fresh cache) vs cached run (target >= 20);
4. ``inference``: images/s of the U-Net: eager, eager with autograd, channels_last,
   ``torch.compile`` (and bf16 autocast on CUDA), at the demo and paper sizes;
5. ``memory``: peak RSS of a short training run at both sizes, each in its own process so peaks
   do not mix;
6. ``efficiency``: a training step's GFLOP/s (FLOPs counted by ``FlopCounterMode``, times
   steps/s) as a fraction of the peak measured in the same run (dense fp32 matmul and 3x3 conv),
   for the demo and real-recipe U-Nets, beside channels_last and batch-32 variants (info).

``run`` wires them, ``render`` prints the table; ``timing`` holds the paired statistics.
"""
