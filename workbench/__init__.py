"""workbench: where does a language model keep what it memorized?"""

__version__ = "0.1.0"
