"""The reference pipeline that builds benchmark splits.

pretrained text-to-image model -> Custom Diffusion on exemplars -> sampling with AbC's prompt
types -> frozen, hashed Hugging Face dataset. ``sources`` installs the real images it starts
from, offline, with their licenses.
"""
