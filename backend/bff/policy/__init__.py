"""What a caller may do: permissions and model access per role (config/policy.yaml)."""
