"""Images to backbone features: the extraction loop, GPU decode, the feature cache, streams."""
