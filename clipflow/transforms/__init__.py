"""Image-to-image transforms: Fourier proxies, perturbations, chains, re-encoding."""
