"""Images on disk: safe decoding, benchmark folder layouts, downloads, synthetic test trees."""
