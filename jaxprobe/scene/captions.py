"""Toy-world captions: the prompts a scene job falls back to when it is given no prompts file."""
from __future__ import annotations


def toy_captions(c):
    """n -> the captions of toy-world scenes config.scene_seed_offset .. + n (the scenes are drawn only when
    asked), as `jobs.prompts` takes a study's fallback."""
    def captions(n: int) -> list[str]:
        from jaxprobe.toy.world import render
        return [render.sample_scene(s).caption for s in range(c.scene_seed_offset, c.scene_seed_offset + n)]
    return captions
