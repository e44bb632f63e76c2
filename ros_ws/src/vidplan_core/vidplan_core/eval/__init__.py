"""Evaluation: metrics (PSNR, SSIM, latent MSE, ECE, correlations, latency) and reports."""
