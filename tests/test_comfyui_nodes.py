"""The node pack inside a real ComfyUI 0.3.75 server on 127.0.0.1: registration, the shipped API workflows on the
tiny model, core nodes on both sides, caching, progress with previews, Cancel, and bad input said clearly."""

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comfyui_server import PACK_ROOT, TINY, TINY_LORA, ComfyServer, comfyui_tree, load_json, run_in_comfyui
from remote_standin import FAKE_KEY, RESULT_FRAMES
from wan_core.cli.main import main as cli_main
from wan_core.video_io import read_video

ROOT = Path(__file__).resolve().parents[1]
NODE_IDS = ("LoadWanModel", "WanLoRAStack", "WanPromptExtend", "WanI2VSampler", "WanV2VSampler", "WanVAEDecode",
            "RemoteWanAPI")
SMALL = {"resolution": "custom", "width": 80, "height": 64, "frames": 9, "steps": 2}


def tiny_workflow(name: str) -> dict:
    """A shipped API workflow with the model names pointed at the tiny files, at a size the CPU runs in seconds."""
    workflow = load_json(ROOT / "workflows" / "api" / f"{name}.json")
    for node in workflow.values():
        inputs = node["inputs"]
        if node["class_type"] == "LoadWanModel":
            image_to_video = inputs["clip_vision"] != "none"
            inputs.update(diffusion_model=TINY["i2v" if image_to_video else "t2v"], vae=TINY["vae"],
                          text_encoder=TINY["text_encoder"], clip_vision=TINY["clip_vision"] if image_to_video else "none")
        if node["class_type"] == "WanLoRAStack":
            inputs.update(lora_1=TINY_LORA, source_1="")
        if node["class_type"] in ("WanI2VSampler", "WanV2VSampler"):  # a preset keeps its own step count
            inputs.update({key: value for key, value in SMALL.items()
                           if key != "steps" or inputs.get("preset", "none") == "none"})
    return workflow


def node_of(workflow: dict, class_type: str) -> str:
    return next(node_id for node_id, node in workflow.items() if node["class_type"] == class_type)


def saved_files(server: ComfyServer, entry: dict, node_id: str) -> list[Path]:
    outputs = entry["outputs"][node_id]
    files = [item for items in outputs.values() if isinstance(items, list) for item in items if isinstance(item, dict)]
    return [server.output_dir / item["subfolder"] / item["filename"] for item in files]


def error_message(entry: dict) -> str:
    return " ".join(json.dumps(data) for kind, data in entry["status"]["messages"] if kind == "execution_error")


def test_the_nodes_register_with_tooltips_and_no_import_error(comfy):
    info = comfy.get("/object_info")
    for node_id in NODE_IDS:
        assert info[node_id]["category"] == "WanFlow"
        inputs = info[node_id]["input"]["required"] | info[node_id]["input"].get("optional", {})
        assert inputs and all(options[1].get("tooltip") for options in inputs.values()), node_id
    assert TINY["i2v"] in info["LoadWanModel"]["input"]["required"]["diffusion_model"][1]["options"]
    assert TINY_LORA in info["WanLoRAStack"]["input"]["required"]["lora_1"][1]["options"]
    pack_lines = [line for line in comfy.log().splitlines() if "custom_nodes/wanflow" in line]
    assert pack_lines and not [line for line in pack_lines if "IMPORT FAILED" in line or "Cannot import" in line]


def test_i2v_workflow_writes_the_video_and_reuses_the_loaded_model(comfy):
    workflow = tiny_workflow("wan21_i2v_480p")
    sampler, save = node_of(workflow, "WanI2VSampler"), node_of(workflow, "SaveVideo")
    messages = comfy.listen()
    try:
        first_id = comfy.queue(workflow, messages.client_id)
        first = comfy.wait(first_id)
        assert first["status"]["status_str"] == "success", first["status"]
        workflow[sampler]["inputs"]["seed"] = 7
        second_id = comfy.queue(workflow, messages.client_id)
        second = comfy.wait(second_id)
        assert second["status"]["status_str"] == "success", second["status"]
    finally:
        messages.close()
    for entry in (first, second):
        (video,) = saved_files(comfy, entry, save)
        frames, fps = read_video(video)
        assert frames.shape == (9, 64, 80, 3) and fps == 16
    # the second run sampled again but took the model from ComfyUI's cache
    cached = messages.of_type("execution_cached", second_id)[0]["nodes"]
    assert node_of(workflow, "LoadWanModel") in cached and sampler not in cached
    assert comfy.log().count("WanFlow: loaded wan2.1_tiny_i2v") == 1
    # the bar advanced every step, with a latent preview
    steps = [event["value"] for event in messages.of_type("progress", first_id) if event["node"] == sampler]
    assert steps == list(range(1, SMALL["steps"] + 1))
    assert len(messages.previews) >= SMALL["steps"]


def cached_nodes(entry: dict) -> list[str]:
    return [node for kind, data in entry["status"]["messages"] if kind == "execution_cached" for node in data["nodes"]]


def test_prompt_extend_node_feeds_the_sampler_and_shows_its_prompt(comfy):
    """The tiny LLM that tiny-models wrote into models/LLM, registered as ComfyUI's LLM folder."""
    info = comfy.get("/object_info")["WanPromptExtend"]
    assert info["input"]["required"]["model"][1]["options"] == ["wan_tiny_prompt_llm", "wan_tiny_prompt_vlm"]
    assert info["input"]["optional"]["image"][0] == "IMAGE"
    workflow = tiny_workflow("wan21_i2v_480p")
    sampler = node_of(workflow, "WanI2VSampler")
    workflow["40"] = {"class_type": "WanPromptExtend", "inputs": {
        "prompt": "a valley", "model": "wan_tiny_prompt_llm", "seed": 5, "max_new_tokens": 24}}
    workflow[sampler]["inputs"]["prompt"] = ["40", 0]
    entry = comfy.run(workflow)
    assert entry["status"]["status_str"] == "success", entry["status"]
    (shown,) = entry["outputs"]["40"]["text"]
    assert shown and shown != "a valley"
    workflow["40"]["inputs"]["model"] = "absent_llm"
    response = comfy.post_prompt(workflow)
    assert response.status_code == 400 and "'absent_llm' is not a model folder" in response.text
    assert "Qwen2.5-1.5B-Instruct" in response.text


def test_prompt_extend_node_shows_the_picture_to_a_vision_language_model_only(comfy):
    """The tiny Qwen2.5-VL that tiny-models wrote next to the LLM, given the workflow's LoadImage picture."""
    workflow = tiny_workflow("wan21_i2v_480p")
    sampler, picture = node_of(workflow, "WanI2VSampler"), node_of(workflow, "LoadImage")
    node = {"prompt": "a valley", "model": "wan_tiny_prompt_vlm", "seed": 5, "max_new_tokens": 24}
    workflow[sampler]["inputs"]["prompt"] = ["40", 0]
    shown = {}
    for case, inputs in {"vlm with image": node | {"image": [picture, 0]}, "vlm alone": node,
                         "llm with image": node | {"model": "wan_tiny_prompt_llm", "image": [picture, 0]},
                         "llm alone": node | {"model": "wan_tiny_prompt_llm"}}.items():
        workflow["40"] = {"class_type": "WanPromptExtend", "inputs": inputs}
        entry = comfy.run(workflow)
        assert entry["status"]["status_str"] == "success", (case, entry["status"])
        (shown[case],) = entry["outputs"]["40"]["text"]
    assert shown["vlm with image"] != shown["vlm alone"]  # the picture changed what the model wrote
    assert shown["llm with image"] == shown["llm alone"]  # a text-only model writes from the words alone, and says so
    assert comfy.log().count("Wan Prompt Extend: wan_tiny_prompt_llm is a text-only model, the image is ignored") == 1


def run_writes_the_video(comfy, name: str) -> dict:
    """Queue a shipped workflow on the tiny model; it succeeds and saves the 9-frame video. Returns the workflow."""
    workflow = tiny_workflow(name)
    entry = comfy.run(workflow)
    assert entry["status"]["status_str"] == "success", entry["status"]
    (video,) = saved_files(comfy, entry, node_of(workflow, "SaveVideo"))
    assert read_video(video)[0].shape == (9, 64, 80, 3)
    return workflow


def test_v2v_lora_workflow_writes_the_video(comfy):
    workflow = run_writes_the_video(comfy, "wan21_v2v_480p_lora")
    assert node_of(workflow, "LoadWanModel") in cached_nodes(comfy.run(workflow))  # an identical post reuses it
    (applied,) = [line for line in comfy.log().splitlines() if f"{TINY_LORA} x1: " in line]
    assert "keys applied" in applied and "unmatched" not in applied


def test_4step_workflow_runs_4_transformer_passes_and_logs_them(comfy):
    run_writes_the_video(comfy, "wan21_i2v_480p_4step")
    assert "WanFlow: 4 transformer passes" in comfy.log()


def test_fast_mode_skips_passes_and_a_preset_conflict_names_both(comfy):
    workflow = tiny_workflow("wan21_i2v_480p")
    sampler = node_of(workflow, "WanI2VSampler")
    workflow[sampler]["inputs"].update(fast_mode=True, steps=6)
    for seed in (1, 2):  # the first fast run of a new model and schedule calibrates, the second (a new seed, so
        workflow[sampler]["inputs"]["seed"] = seed  # that ComfyUI runs it again) skips
        entry = comfy.run(workflow)
        assert entry["status"]["status_str"] == "success", entry["status"]
    assert "WanFlow: 12 transformer passes, 0 skipped by fast mode (calibrating" in comfy.log()
    assert re.search(r"WanFlow: 12 transformer passes, [1-9]\d* skipped by fast mode\n", comfy.log())
    workflow[sampler]["inputs"].update(fast_mode=False, preset="4step", steps=4, guidance=3.5)
    entry = comfy.run(workflow)
    assert "preset='4step' samples with guidance 1.0, and guidance 3.5 was asked for" in error_message(entry)


def test_core_vae_decode_reads_the_sampler_latent(comfy):
    """LATENT is ComfyUI's raw Wan 2.1 latent: core VAELoader + VAEDecode give the frames WanVAEDecode gives."""
    workflow = tiny_workflow("wan21_i2v_480p")
    sampler, model = node_of(workflow, "WanI2VSampler"), node_of(workflow, "LoadWanModel")
    workflow.update({
        "20": {"class_type": "WanVAEDecode", "inputs": {"model": [model, 0], "latent": [sampler, 0], "tiled": False}},
        "21": {"class_type": "SaveImage", "inputs": {"images": ["20", 0], "filename_prefix": "wanflow_decode"}},
        "22": {"class_type": "VAELoader", "inputs": {"vae_name": TINY["vae"]}},
        "23": {"class_type": "VAEDecode", "inputs": {"samples": [sampler, 0], "vae": ["22", 0]}},
        "24": {"class_type": "SaveImage", "inputs": {"images": ["23", 0], "filename_prefix": "core_decode"}},
    })
    entry = comfy.run(workflow)
    assert entry["status"]["status_str"] == "success", entry["status"]
    ours, core = (np.stack([np.asarray(Image.open(path), dtype=np.int16) for path in saved_files(comfy, entry, node)])
                  for node in ("21", "24"))
    assert ours.shape == core.shape == (9, 64, 80, 3)
    assert np.abs(ours - core).max() <= 2  # two implementations of one VAE, rounded to 8 bits


def test_the_step_cache_input_reaches_the_engine(comfy):
    """Fast mode changes the sampled video; a prompt saved before the input existed runs with the cache off."""
    workflow = tiny_workflow("wan21_i2v_480p")
    sampler, model = node_of(workflow, "WanI2VSampler"), node_of(workflow, "LoadWanModel")
    workflow[sampler]["inputs"].update(steps=4, seed=99)
    workflow.update({
        "20": {"class_type": "WanVAEDecode", "inputs": {"model": [model, 0], "latent": [sampler, 0], "tiled": False}},
        "21": {"class_type": "SaveImage", "inputs": {"images": ["20", 0], "filename_prefix": "step_cache"}},
    })
    frames = {}
    for step_cache in (0.0, 0.5, None):
        if step_cache is None:
            del workflow[sampler]["inputs"]["step_cache"]
        else:
            workflow[sampler]["inputs"]["step_cache"] = step_cache
        entry = comfy.run(workflow)
        assert entry["status"]["status_str"] == "success", entry["status"]
        frames[step_cache] = np.stack([np.asarray(Image.open(path)) for path in saved_files(comfy, entry, "21")])
    assert np.array_equal(frames[None], frames[0.0])
    assert not np.array_equal(frames[0.5], frames[0.0])


def test_the_attention_input_reuses_the_loaded_weights(comfy):
    """attention is a setting of the loaded model, not of its weights: sdpa gives the frames of a prompt saved before
    the speed inputs existed, from the same weights."""
    workflow = tiny_workflow("wan21_i2v_480p")
    sampler, model = node_of(workflow, "WanI2VSampler"), node_of(workflow, "LoadWanModel")
    workflow[sampler]["inputs"]["seed"] = 31
    workflow.update({
        "20": {"class_type": "WanVAEDecode", "inputs": {"model": [model, 0], "latent": [sampler, 0], "tiled": False}},
        "21": {"class_type": "SaveImage", "inputs": {"images": ["20", 0], "filename_prefix": "attention"}},
    })
    del workflow[model]["inputs"]["attention"], workflow[model]["inputs"]["compile"]
    frames = {}
    for attention in (None, "sdpa"):
        if attention:
            workflow[model]["inputs"].update(attention=attention, compile=False)
        log_before = len(comfy.log())
        entry = comfy.run(workflow)
        assert entry["status"]["status_str"] == "success", entry["status"]
        frames[attention] = np.stack([np.asarray(Image.open(path)) for path in saved_files(comfy, entry, "21")])
    new_log = comfy.log()[log_before:]
    assert "WanFlow: reusing the loaded wan2.1_tiny_i2v" in new_log and "WanFlow: loaded" not in new_log
    assert np.array_equal(frames["sdpa"], frames[None])


def test_an_attention_kernel_the_machine_lacks_fails_validation_naming_it(comfy):
    workflow = tiny_workflow("wan21_i2v_480p")
    workflow[node_of(workflow, "LoadWanModel")]["inputs"]["attention"] = "flash"
    response = comfy.post_prompt(workflow)
    assert response.status_code == 400
    errors = response.json()["node_errors"][node_of(workflow, "LoadWanModel")]["errors"]
    assert any("attention='flash' needs a CUDA GPU" in error["details"] for error in errors), errors


@pytest.mark.parametrize("offload,resident_blocks,message", [
    ("blocks", 3, "resident_blocks=3 is more than the diffusion model's 2 blocks: choose 0 to 2"),
    ("none", 1, "resident_blocks=1 applies to offload='blocks' only, and offload is 'none'"),
])
def test_a_resident_block_count_the_model_cannot_take_fails_validation_naming_it(comfy, offload, resident_blocks,
                                                                                 message):
    """Checked before the offload's need for a GPU, so that this CPU machine reaches the count, which validation
    reads from the diffusion model file's tensor shapes."""
    workflow = tiny_workflow("wan21_i2v_480p")
    workflow[node_of(workflow, "LoadWanModel")]["inputs"] |= {"offload": offload, "resident_blocks": resident_blocks}
    response = comfy.post_prompt(workflow)
    assert response.status_code == 400
    errors = response.json()["node_errors"][node_of(workflow, "LoadWanModel")]["errors"]
    assert any(message in error["details"] for error in errors), errors


def test_a_model_file_not_in_the_folder_fails_validation_naming_it(comfy):
    workflow = tiny_workflow("wan21_i2v_480p")
    workflow[node_of(workflow, "LoadWanModel")]["inputs"]["diffusion_model"] = "wan2.1_missing.safetensors"
    response = comfy.post_prompt(workflow)
    assert response.status_code == 400
    errors = response.json()["node_errors"][node_of(workflow, "LoadWanModel")]
    assert errors["class_type"] == "LoadWanModel"
    assert any("wan2.1_missing.safetensors" in error["details"] and "diffusion_models folder" in error["details"]
               for error in errors["errors"])


def test_a_wrong_file_in_a_slot_fails_with_the_model_files_message(comfy):
    shutil.copy(comfy.models_dir / "vae" / TINY["vae"], comfy.models_dir / "diffusion_models" / "vae_by_mistake.safetensors")
    workflow = tiny_workflow("wan21_i2v_480p")
    workflow[node_of(workflow, "LoadWanModel")]["inputs"]["diffusion_model"] = "vae_by_mistake.safetensors"
    entry = comfy.run(workflow)
    assert entry["status"]["status_str"] == "error"
    message = error_message(entry)
    assert "vae_by_mistake.safetensors" in message and "VAE" in message and "LoadWanModel" in message


def test_a_missing_image_fails_naming_the_node(comfy):
    workflow = tiny_workflow("wan21_i2v_480p")
    load_image = node_of(workflow, "LoadImage")
    workflow[load_image]["inputs"]["image"] = "not_uploaded.png"
    response = comfy.post_prompt(workflow)
    assert response.status_code == 400
    errors = response.json()["node_errors"][load_image]
    assert errors["class_type"] == "LoadImage" and "not_uploaded.png" in json.dumps(errors["errors"])


def test_a_lora_stack_of_four_is_refused(comfy):
    workflow = tiny_workflow("wan21_v2v_480p_lora")
    stack = node_of(workflow, "WanLoRAStack")
    workflow[stack]["inputs"].update(lora_2=TINY_LORA)
    workflow["30"] = {"class_type": "WanLoRAStack", "inputs": {**workflow[stack]["inputs"], "loras": [stack, 0]}}
    workflow[node_of(workflow, "LoadWanModel")]["inputs"]["loras"] = ["30", 0]
    entry = comfy.run(workflow)
    assert entry["status"]["status_str"] == "error"
    assert "a LoRA stack of 4" in error_message(entry) and "at most 3" in error_message(entry)


def test_interrupt_stops_sampling_within_a_step_and_the_next_prompt_runs(comfy):
    workflow = tiny_workflow("wan21_i2v_480p")
    sampler = node_of(workflow, "WanI2VSampler")
    workflow[sampler]["inputs"].update(steps=60, width=160, height=96, frames=33, seed=11)
    messages = comfy.listen()
    try:
        prompt_id = comfy.queue(workflow, messages.client_id)
        deadline = time.monotonic() + 240
        while not [e for e in messages.of_type("progress", prompt_id) if e["node"] == sampler]:
            assert time.monotonic() < deadline, "sampling never started"
            time.sleep(0.05)
        comfy.post("/interrupt", {})
        interrupted_at = max(e["value"] for e in messages.of_type("progress", prompt_id) if e["node"] == sampler)
        entry = comfy.wait(prompt_id)
        steps_seen = [e["value"] for e in messages.of_type("progress", prompt_id) if e["node"] == sampler]
    finally:
        messages.close()
    assert entry["status"]["status_str"] == "error"
    assert any(kind == "execution_interrupted" for kind, _ in entry["status"]["messages"])
    assert max(steps_seen) <= interrupted_at + 1 < 60
    after = comfy.run(tiny_workflow("wan21_i2v_480p"))
    assert after["status"]["status_str"] == "success", after["status"]


def test_free_memory_drops_the_loaded_model(comfy):
    workflow = tiny_workflow("wan21_i2v_480p")
    workflow[node_of(workflow, "WanI2VSampler")]["inputs"]["seed"] = 123
    assert comfy.run(workflow)["status"]["status_str"] == "success"
    loads = comfy.log().count("WanFlow: loaded wan2.1_tiny_i2v")
    comfy.post("/free", {"unload_models": True, "free_memory": True})
    workflow[node_of(workflow, "WanI2VSampler")]["inputs"]["seed"] = 124
    assert comfy.run(workflow)["status"]["status_str"] == "success"
    assert comfy.log().count("WanFlow: loaded wan2.1_tiny_i2v") == loads + 1


def test_each_network_is_its_own_model_in_comfyuis_memory_manager(tmp_path):
    """The four networks are four models to ComfyUI, each loaded for its stage (the transformer last, for
    sampling), and unloading them all (Free memory) stops the pack keeping the weights; a rerun with cached prompts
    loads no text encoder, and a block-swapped transformer counts as its resident size. No HTTP endpoint lists
    loaded models, so this runs the nodes in a ComfyUI process and reads comfy.model_management itself."""
    assert cli_main(["tiny-models", "--models-dir", str(tmp_path / "models")]) == 0
    (tmp_path / "custom_nodes").mkdir()
    (tmp_path / "custom_nodes" / "wanflow").symlink_to(PACK_ROOT, target_is_directory=True)
    result = run_in_comfyui(comfyui_tree(), Path(__file__).with_name("comfy_loaded_models.py"), tmp_path / "models",
                            tmp_path / "custom_nodes", capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    held = json.loads(result.stdout.strip().splitlines()[-1])
    assert held["after_sampling"][0] == "transformer"
    assert sorted(held["after_sampling"]) == ["image_encoder", "text_encoder", "transformer", "vae"]
    assert held["after_unload"] == [] and held["kept"] == 0
    # the same prompts again (new seed, reloaded weights): cached, so the text encoder is never loaded
    assert "text_encoder" not in held["after_rerun"] and "transformer" in held["after_rerun"]
    # block swap: ComfyUI counts what the hooks and the resident block keep on the GPU (block_swap_resident_bytes),
    # not the whole model, and what it moves itself is the resident block alone
    swap = held["block_swap"]
    assert swap["listed"] and swap["reported"] == swap["loaded"] == swap["resident"]
    assert swap["moved_by_comfyui"] == swap["first_block"]


def test_remote_workflow_runs_against_the_provider_stand_in(comfy):
    workflow = tiny_workflow("remote_wan_i2v")
    entry = comfy.run(workflow)
    assert entry["status"]["status_str"] == "success", entry["status"]
    (video,) = saved_files(comfy, entry, node_of(workflow, "SaveVideo"))
    frames, fps = read_video(video)
    assert frames.shape[0] == RESULT_FRAMES and fps == 16
    (submit,) = comfy.standin.calls("submit")
    assert "i2v-480p" in submit.path and submit.json["prompt"].startswith("A sunlit mountain valley")
    assert FAKE_KEY not in comfy.log() and FAKE_KEY not in json.dumps(entry)
    again = comfy.run(workflow)
    assert node_of(workflow, "RemoteWanAPI") in cached_nodes(again) and len(comfy.standin.calls("submit")) == 1


def test_remote_task_failure_is_said_in_the_node_error(comfy):
    workflow = tiny_workflow("remote_wan_i2v")
    workflow[node_of(workflow, "RemoteWanAPI")]["inputs"]["seed"] = 5
    comfy.standin.outcome = "failed"
    try:
        entry = comfy.run(workflow)
    finally:
        comfy.standin.outcome = "success"
    assert entry["status"]["status_str"] == "error"
    assert "Task failed" in error_message(entry) and comfy.standin.fail_reason in error_message(entry)
    assert FAKE_KEY not in json.dumps(entry)


def test_cancel_stops_waiting_for_the_remote_job(comfy):
    workflow = tiny_workflow("remote_wan_i2v")
    workflow[node_of(workflow, "RemoteWanAPI")]["inputs"]["seed"] = 6
    comfy.standin.outcome = "never"
    polls_before = len(comfy.standin.calls("poll"))
    try:
        prompt_id = comfy.queue(workflow)
        deadline = time.monotonic() + 120
        while len(comfy.standin.calls("poll")) == polls_before:
            assert time.monotonic() < deadline, "the job was never polled"
            time.sleep(0.05)
        comfy.post("/interrupt", {})
        entry = comfy.wait(prompt_id, timeout=30)
        polls_at_end = len(comfy.standin.calls("poll"))
        time.sleep(4)  # longer than the poll interval: a waiter still running would poll again
    finally:
        comfy.standin.outcome = "success"
    assert any(kind == "execution_interrupted" for kind, _ in entry["status"]["messages"])
    assert len(comfy.standin.calls("poll")) == polls_at_end


def test_fp8_weight_storage_runs_the_workflow(comfy):
    workflow = tiny_workflow("wan21_i2v_480p")
    workflow[node_of(workflow, "LoadWanModel")]["inputs"]["weight_storage"] = "fp8"
    entry = comfy.run(workflow)
    assert entry["status"]["status_str"] == "success", entry["status"]
    (video,) = saved_files(comfy, entry, node_of(workflow, "SaveVideo"))
    assert read_video(video)[0].shape == (9, 64, 80, 3)
