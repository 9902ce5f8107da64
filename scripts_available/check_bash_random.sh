#!/bin/bash

myvalue=$RANDOM
mytype=random_gen
check_type=my_bash_random
check_style=stack

myvalue2=$RANDOM
mytype2=random_gen2
check_type2=my_bash_random2
check_style2=rate

echo $mytype $myvalue $check_type $check_style
echo -n $mytype2 $myvalue2 $check_type2 $check_style2
