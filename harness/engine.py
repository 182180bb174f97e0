"""Whether a Docker engine answers: asked without loading the lab's libraries."""


def docker_client(timeout: float = 5.0):
    """A client for a Docker engine that answers, or None (with the reason)."""
    try:
        import docker

        client = docker.from_env(timeout=timeout)
        client.ping()
        return client, None
    except Exception as exc:  # no socket, engine down, permission denied...
        return None, str(exc).splitlines()[0][:200]
