"""The paper's reproduction, an application built on the clipflow library.

experiments: the paper's tables as arms × seeds on one shared feature cache;
baselines: UnivFD linear probe and Mahalanobis on the same cached features;
results + numbers/: the paper's published numbers, as data;
tables: comparison tables (ours, paper, Δ) and plots.
"""
