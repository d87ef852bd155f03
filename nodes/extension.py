"""The list of WanFlow nodes ComfyUI registers."""

from comfy_api.v0_0_2 import ComfyExtension, io

from .loading import LoadWanModel, WanLoRAStack
from .prompt import WanPromptExtend
from .remote import RemoteWanAPI
from .sampling import WanI2VSampler, WanV2VSampler, WanVAEDecode


class WanFlowExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [LoadWanModel, WanLoRAStack, WanPromptExtend, WanI2VSampler, WanV2VSampler, WanVAEDecode, RemoteWanAPI]
