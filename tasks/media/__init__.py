"""Per-modality processing (image, text, audio, video, timeseries) and the pretrained encoders."""
