"""WanFlow for ComfyUI: Wan 2.1 image-to-video and video-to-video, local and on the hosted APIs.

ComfyUI imports this folder from custom_nodes/. Importing it is cheap: the node classes load when ComfyUI asks
for them, and the model libraries (diffusers, transformers) only when a model is first loaded.
"""


async def comfy_entrypoint():
    from .nodes.extension import WanFlowExtension

    return WanFlowExtension()
