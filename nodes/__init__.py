"""ComfyUI adapters over wan_core: they translate ComfyUI's types, folders, progress and Cancel, nothing more."""
