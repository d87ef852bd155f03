"""The shipped UI workflows in ComfyUI's real web page (headless Debian Chromium): they load as a drop does, with
no missing node types, and the page turns each into exactly the matching API-format file."""

import shutil

import pytest
import requests

from comfyui_server import PACK_ROOT, load_json

WORKFLOWS = ("wan21_i2v_480p", "wan21_v2v_480p_lora", "wan21_i2v_480p_4step", "remote_wan_i2v")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def page(comfy, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    requests.post(f"{comfy.url}/settings/Comfy.TutorialCompleted", json=True, timeout=30).raise_for_status()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page()
        page.goto(comfy.url)
        page.wait_for_function("() => window.app && window.app.graph && window.LiteGraph", timeout=120_000)
        yield page
        browser.close()


def api_view(prompt: dict) -> dict:
    return {node_id: (node["class_type"], node["inputs"]) for node_id, node in prompt.items()}


@pytest.mark.parametrize("name", WORKFLOWS)
def test_ui_workflow_loads_and_queues_as_its_api_file(page, name):
    workflow = load_json(PACK_ROOT / "workflows" / f"{name}.json")
    loaded = page.evaluate("""async ([workflow, name]) => {
        await app.loadGraphData(workflow, true, true, name,
                                {showMissingNodesDialog: false, showMissingModelsDialog: false});
        const missing = workflow.nodes.map(node => node.type).filter(type => !LiteGraph.registered_node_types[type]);
        return {missing, nodes: app.graph.nodes.length, prompt: (await app.graphToPrompt()).output,
                page: document.body.innerText};
    }""", [workflow, name])
    assert loaded["missing"] == []
    assert "Invalid workflow" not in loaded["page"]  # the frontend's schema check of the file
    assert loaded["nodes"] == len(workflow["nodes"])
    assert api_view(loaded["prompt"]) == api_view(load_json(PACK_ROOT / "workflows" / "api" / f"{name}.json"))


def test_loader_node_carries_model_download_links():
    for name in ("wan21_i2v_480p", "wan21_v2v_480p_lora", "wan21_i2v_480p_4step"):
        (loader,) = [node for node in load_json(PACK_ROOT / "workflows" / f"{name}.json")["nodes"]
                     if node["type"] == "LoadWanModel"]
        models = loader["properties"]["models"]
        assert {model["name"] for model in models} == {value for value in loader["widgets_values"][:4] if value != "none"}
        assert all(model["url"].startswith("https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/")
                   and model["url"].endswith(f"/{model['directory']}/{model['name']}") for model in models)


def test_4step_workflow_carries_the_distill_loras_download_link():
    (stack,) = [node for node in load_json(PACK_ROOT / "workflows" / "wan21_i2v_480p_4step.json")["nodes"]
                if node["type"] == "WanLoRAStack"]
    (model,) = stack["properties"]["models"]
    assert model == {"name": stack["widgets_values"][0], "directory": "loras",
                     "url": "https://huggingface.co/lightx2v/Wan2.1-Distill-Loras/resolve/main/" + model["name"]}
