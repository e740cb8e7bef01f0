"""mlmctl: raw text to a pretrained, fine-tuned and evaluated BERT-family model.

Importing the package is cheap on purpose: the CLI must answer `--help` without
loading torch or tokenizers.
"""

__version__ = "0.1.0"
