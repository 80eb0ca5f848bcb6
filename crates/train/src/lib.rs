//! The epoch loop: frozen-feature fast path, fine-tuning, metrics, curves and exact resume.
