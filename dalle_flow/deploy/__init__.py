"""Deployment: the Flow the toggles make (`flow_config`, `flow_graph`) and its Kubernetes export (`k8s`)."""
