"""The old lib.sharedvars: values one module keeps for another (or for its own next cycle). Those
JSON can hold are kept in the state file, so they outlive a restart of the Python host."""

last_value = {}


def storevar(mytype, myvalue):
    last_value.update({mytype: myvalue})


def getvar(mytype):
    return last_value[mytype]
