"""`python -m serving --port 8500 --rest_api_port 8501 --model_name m --model_base_path p`."""

import sys

from serving.main import main

if __name__ == "__main__":
    sys.exit(main())
