"""edgenlp: make fine-tuned transformer NLP models small and fast for edge CPUs.

Importing the package is cheap and pulls in neither torch nor transformers; the stages import
them lazily so the runtime and the benchmark workers stay light.
"""

__version__ = "0.1.0"
