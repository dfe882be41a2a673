"""Study 2: concept probing of a CNN across training ("Probing Neurons with CLIP Concepts").

Data flows one way: concept scores per image (`scores`: CLIP zero-shot, or the ground truth) -> positive/negative
sets per concept (`sets`) -> activations of every module at every checkpoint -> probes of three families
(`sweep`) -> the long results CSV and the what-where-when maps (`figures`).
"""
