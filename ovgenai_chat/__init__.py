"""ovgenai-chat: chat with small LLMs on OpenVINO GenAI's LLMPipeline."""

__version__ = "0.1.0"
