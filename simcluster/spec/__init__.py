"""What the user asks for: the scenario (``config``, pydantic, units parsed once), the hardware catalog
(``hardware``: GPUs, NICs, links) and the model shapes (``model``). Pure data, validated at the edge."""
