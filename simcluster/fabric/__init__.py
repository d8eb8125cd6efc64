"""Interconnects as graphs: ``topology`` (the ``Fabric``: a NetworkX graph with per-link arrays, built by name
or from a file), ``builders`` (NVSwitch nodes, rail fat-trees, leaf-spines, k-ary fat-trees, tori), ``files``
(YAML/GraphML fabric files) and ``routing`` (shortest paths, ECMP hashing, adaptive spraying)."""
