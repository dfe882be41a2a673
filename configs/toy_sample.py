"""Sample from the shipped toy pipeline (assets/toy_pipeline): runs on a laptop CPU in seconds."""
from configs import sd_v1_sample


def get_config():
    c = sd_v1_sample.get_config()
    c.pipeline_dir = "assets/toy_pipeline"
    c.prompts = "a large red sphere on a checkered floor|a small blue cube and a green cone on a checkered floor"
    c.height = 0  # 0: the pipeline's native size
    c.width = 0
    c.batch_size = 8
    return c
