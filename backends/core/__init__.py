"""The lab's core: records, events, configuration, options, the Lab,
the device worker, plans and the store."""
