"""The image cache: hit lookup, verified fills with coalescing, prune, clean and the queue."""
