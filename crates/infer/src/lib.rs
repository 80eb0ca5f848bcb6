//! Prediction: top-k class names and probabilities for images, from a checkpoint.
