"""A small stand-in for the AUTOMATIC1111 WebUI's `modules` package (v1.10.1), for tests only.

It follows the real signatures and call order described in shared/design/webui.md; every model and
sampler it drives is real (tiny ldm UNet, k-diffusion samplers, CLIP BPE tokenizer).
"""
