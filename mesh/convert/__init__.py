"""The LLM-to-SLM conversion loop: record calls (S1), curate and cluster them (S2/S3),
fine-tune a LoRA student per cluster (S4/S5), deploy it as an agent the planner prefers (S6)."""
