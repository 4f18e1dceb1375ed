"""The operator side: the `userdest` CLI, replay, dead letters, queue tools and the read model."""
