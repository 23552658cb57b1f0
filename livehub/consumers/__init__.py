"""Async consumers: sources an app writes server API commands to, which livehub executes
(Centrifugo's ``consumers``). ``dispatch`` runs one command; ``postgresql`` reads an outbox
table, ``redis_stream`` Redis Streams through a consumer group, ``nats_jetstream`` a JetStream
durable consumer. Configured by ``consumers`` in the settings; a Hub starts the enabled ones."""
