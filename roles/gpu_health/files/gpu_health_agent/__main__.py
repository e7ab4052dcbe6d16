"""``python3 -m gpu_health_agent --config /etc/gpu_health/agent.json``."""

import sys

from gpu_health_agent.cli import main

sys.exit(main())
