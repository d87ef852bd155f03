"""WanPromptExtend: a short prompt rewritten into a detailed one by a local instruct model from models/LLM; a
vision-language model is also shown the picture."""

from __future__ import annotations

import logging
import os
from functools import lru_cache

import folder_paths
from comfy_api.v0_0_2 import io, ui

from ..wan_core.errors import WanInputError
from ..wan_core.prompt_extend import DEFAULT_MAX_NEW_TOKENS, LLM_FOLDER, MAX_NEW_TOKENS_RANGE, SUGGESTED_MODEL, \
    SUGGESTED_VISION_MODEL, missing_model_error, model_folders
from ..wan_core.sampling.params import SEED_RANGE
from .comfy_bridge import CATEGORY

# ComfyUI names no LLM folder of its own in 0.3.x: register models/LLM, as other language-model packs do
if LLM_FOLDER not in folder_paths.folder_names_and_paths:
    folder_paths.add_model_folder_path(LLM_FOLDER, os.path.join(folder_paths.models_dir, LLM_FOLDER))


def llm_choices() -> list[str]:
    """Model folders under every registered models/LLM path."""
    return sorted({name for folder in folder_paths.get_folder_paths(LLM_FOLDER) for name in model_folders(folder)})


def llm_path(name: str) -> str:
    for folder in folder_paths.get_folder_paths(LLM_FOLDER):
        if name in model_folders(folder):
            return os.path.join(folder, name)
    raise missing_model_error(f"{name!r} is not a model folder in ComfyUI's {LLM_FOLDER} folder "
                              f"({', '.join(folder_paths.get_folder_paths(LLM_FOLDER))})")


@lru_cache(maxsize=1)
def _loaded(path: str):
    """The last model used stays loaded: a graph queued again does not read it again."""
    from ..wan_core.prompt_extend import PromptExtender

    return PromptExtender.load(path)


class WanPromptExtend(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WanPromptExtend",
            display_name="Wan Prompt Extend",
            category=CATEGORY,
            description="Rewrites a short prompt into the detailed kind Wan 2.1 was trained on, with a local "
                        f"instruct model from models/{LLM_FOLDER} (e.g. {SUGGESTED_MODEL}, or "
                        f"{SUGGESTED_VISION_MODEL}).",
            inputs=[
                io.String.Input("prompt", multiline=True, default="", tooltip="The short idea to extend."),
                io.Combo.Input("model", options=llm_choices(),
                               tooltip=f"A transformers chat model folder in models/{LLM_FOLDER}."),
                io.Int.Input("seed", default=0, min=0, max=SEED_RANGE[1], control_after_generate=True,
                             tooltip="The same prompt, model and seed give the same extended prompt."),
                io.Int.Input("max_new_tokens", default=DEFAULT_MAX_NEW_TOKENS, min=MAX_NEW_TOKENS_RANGE[0],
                             max=MAX_NEW_TOKENS_RANGE[1], tooltip="Longest answer, in tokens (~0.75 words each)."),
                io.Image.Input("image", optional=True,
                               tooltip="The picture the video starts from (the first frame is used): a "
                                       "vision-language model describes it; a text-only model ignores it."),
            ],
            outputs=[io.String.Output(display_name="prompt", tooltip="The extended prompt, for a sampler's prompt.")],
        )

    @classmethod
    def validate_inputs(cls, model):
        try:
            llm_path(model)
        except WanInputError as error:
            return str(error)
        return True

    @classmethod
    def execute(cls, prompt, model, seed, max_new_tokens, image=None) -> io.NodeOutput:
        extender = _loaded(llm_path(model))
        if image is not None and not extender.sees_pictures:
            logging.info("Wan Prompt Extend: %s is a text-only model, the image is ignored", model)
        extended = extender.extend(prompt, seed, max_new_tokens, picture=image)
        logging.info("Wan Prompt Extend: %s", extended)
        return io.NodeOutput(extended, ui=ui.PreviewText(extended))  # shown on the node, as ComfyUI's Preview Any
