"""phijax's named configs, installed as the package ``phijax.configs``.

Run one by name or path (``--config=tiny``, ``--config=configs/tiny.py:runlocal``);
build your own on top of one with ``from phijax.configs import tiny``.
"""
