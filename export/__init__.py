"""Export: ONNX, quantization, TensorRT engines (needs the export extra)."""
