"""The reference every benchmark compares with: diffusers' WanImageToVideoPipeline on a wan_core bundle's modules."""

from __future__ import annotations

from diffusers import UniPCMultistepScheduler, WanImageToVideoPipeline


def reference_pipeline(models, flow_shift: float) -> WanImageToVideoPipeline:
    """The same weights as `models` (a wan_core WanModels) under diffusers' pipeline, with its flow UniPC."""
    pipe = WanImageToVideoPipeline(
        tokenizer=models.tokenizer, text_encoder=models.text_encoder, vae=models.vae,
        scheduler=UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                          flow_shift=flow_shift),
        image_processor=models.image_processor, image_encoder=models.image_encoder, transformer=models.transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe
