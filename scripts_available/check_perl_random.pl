#!/usr/bin/perl
# Sends two random numbers, like the bash example: one as is, one as a rate.
use strict;
use warnings;

my $check_type = 'my_perl_random';
printf "%s %d %s %s\n", 'perl_random_gen', int(rand(32768)), $check_type, 'stack';
printf "%s %d %s %s\n", 'perl_random_gen2', int(rand(32768)), $check_type, 'rate';
