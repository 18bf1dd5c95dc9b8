"""``python -m wavssl_onnx`` = the ``wavssl-onnx`` command."""

import sys

from .cli import main

sys.exit(main())
