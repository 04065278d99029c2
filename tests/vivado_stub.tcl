# Stand-ins for the Vivado Tcl commands mulfree's build scripts use, so plain tclsh can run them.
#
# Sourced before build.tcl: each stub records its call as one JSON array per line in the file
# $::env(STUB_LOG), checks what it can (files added exist, cells and pins belong to created
# cells), and returns what the scripts need. A command that is neither Tcl nor stubbed here
# fails ("invalid command name"), so a misspelt Vivado command fails the test.
#
# Knobs (environment): STUB_BOARD_PART (what get_board_parts finds, default none),
# STUB_SLACK (worst setup slack, default 0.25), STUB_PROGRESS (run progress, default 100%).

set ::stub_log [open $::env(STUB_LOG) w]
set ::stub_cells [dict create]
set ::stub_props [dict create]
set ::stub_generated [list]

proc stub_json_str {s} {
    return "\"[string map [list \\ \\\\ \" \\\" \n \\n \t \\t \r \\r] $s]\""
}

proc stub_record {args} {
    set items [list]
    foreach a $args { lappend items [stub_json_str $a] }
    puts $::stub_log "\[[join $items ,]\]"
    flush $::stub_log
}

proc stub_env {name default} {
    if {[info exists ::env($name)]} { return $::env($name) }
    return $default
}

# Options: "-name value" pairs and flags; returns {options positional}.
proc stub_parse {argv flags} {
    set opts [dict create]
    set pos [list]
    for {set i 0} {$i < [llength $argv]} {incr i} {
        set a [lindex $argv $i]
        if {[string index $a 0] eq "-" && ![string is double -strict $a]} {
            if {[lsearch -exact $flags $a] >= 0} {
                dict set opts $a 1
            } else {
                incr i
                dict set opts $a [lindex $argv $i]
            }
        } else {
            lappend pos $a
        }
    }
    return [list $opts $pos]
}

proc stub_cell_of {path} {
    set cell [lindex [split $path /] 0]
    if {![dict exists $::stub_cells $cell]} {
        error "stub: no cell '$cell' was created (in '$path')"
    }
    return $cell
}

# Project and files.
proc create_project {args} {
    lassign [stub_parse $args {-force}] opts pos
    stub_record create_project [lindex $pos 0] [lindex $pos 1] [dict get $opts -part]
    return [lindex $pos 0]
}
proc current_project {args} { return project }
proc current_fileset {args} { return sources_1 }
proc get_board_parts {args} { return [stub_env STUB_BOARD_PART ""] }
proc update_compile_order {args} { stub_record update_compile_order {*}$args }
proc add_files {args} {
    lassign [stub_parse $args {-norecurse}] opts pos
    set fileset sources_1
    if {[dict exists $opts -fileset]} { set fileset [dict get $opts -fileset] }
    foreach f [concat {*}$pos] {
        if {![file exists $f] && [lsearch -exact $::stub_generated $f] < 0} {
            error "stub: add_files of a file that does not exist: $f"
        }
        stub_record add_files $fileset $f
    }
}
proc get_files {args} { return [lindex $args end] }

# Properties: set_property NAME VALUE OBJ, or set_property -dict {NAME VALUE ...} OBJ.
proc set_property {args} {
    if {[lindex $args 0] eq "-dict"} {
        set obj [lindex $args 2]
        foreach {k v} [lindex $args 1] {
            dict set ::stub_props $obj $k $v
            stub_record set_property $k $v $obj
        }
    } else {
        lassign $args k v obj
        dict set ::stub_props $obj $k $v
        stub_record set_property $k $v $obj
    }
}
proc get_property {name obj} {
    switch -- $name {
        PROGRESS { return [stub_env STUB_PROGRESS "100%"] }
        DIRECTORY { return "vivado/runs/$obj" }
        SLACK { return [stub_env STUB_SLACK 0.25] }
        CONFIG.PCW_ACT_FPGA0_PERIPHERAL_FREQMHZ {
            return [dict get $::stub_props $obj CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ]
        }
    }
    return [dict get $::stub_props $obj $name]
}

# Block design.
proc create_bd_design {name} { stub_record create_bd_design $name }
proc create_bd_cell {args} {
    lassign [stub_parse $args {}] opts pos
    set name [lindex $pos 0]
    set type [dict get $opts -type]
    set what [expr {$type eq "module" ? [dict get $opts -reference] : [dict get $opts -vlnv]}]
    dict set ::stub_cells $name $what
    stub_record create_bd_cell $type $what $name
    return $name
}
proc get_bd_cells {args} {
    foreach c $args { stub_cell_of $c }
    return $args
}
proc get_bd_pins {args} {
    set pins [concat {*}$args]
    foreach p $pins { stub_cell_of $p }
    return $pins
}
proc get_bd_intf_pins {args} { return [get_bd_pins {*}$args] }
proc get_bd_addr_spaces {args} { return [get_bd_pins {*}$args] }
proc get_bd_addr_segs {args} { return [get_bd_pins {*}$args] }
proc apply_bd_automation {args} {
    lassign [stub_parse $args {}] opts pos
    stub_record apply_bd_automation [dict get $opts -rule] [dict get $opts -config] {*}$pos
}
proc connect_bd_net {args} { stub_record connect_bd_net {*}[concat {*}$args] }
proc connect_bd_intf_net {args} { stub_record connect_bd_intf_net {*}[concat {*}$args] }
proc assign_bd_address {args} {
    lassign [stub_parse $args {-force}] opts pos
    set offset ""
    set range ""
    if {[dict exists $opts -offset]} { set offset [dict get $opts -offset] }
    if {[dict exists $opts -range]} { set range [dict get $opts -range] }
    stub_record assign_bd_address [dict get $opts -target_address_space] [lindex $pos 0] \
        $offset $range
}
proc validate_bd_design {args} { stub_record validate_bd_design }
proc save_bd_design {args} { stub_record save_bd_design }
proc make_wrapper {args} {
    set path [file join $::mulfree_dir vivado system_wrapper.v]
    lappend ::stub_generated $path
    stub_record make_wrapper $path
    return $path
}

# Runs and outputs.
proc get_runs {name} { return $name }
proc launch_runs {args} { stub_record launch_runs {*}$args }
proc wait_on_run {name} { stub_record wait_on_run $name }
proc open_run {name} { stub_record open_run $name }
proc report_utilization {args} { stub_record report_utilization {*}$args }
proc report_timing_summary {args} { stub_record report_timing_summary {*}$args }
proc get_timing_paths {args} { return path }
proc write_hw_platform {args} {
    lassign [stub_parse $args {-fixed -include_bit -force}] opts pos
    stub_record write_hw_platform [dict get $opts -file] {*}[dict keys $opts]
}
proc write_cfgmem {args} {
    lassign [stub_parse $args {-force -disablebitswap}] opts pos
    stub_record write_cfgmem [dict get $opts -file] [dict get $opts -format] \
        [dict get $opts -interface] [dict get $opts -loadbit] {*}[dict keys $opts]
}

# `file copy` of Vivado's products is recorded, not done; other `file` commands are real.
rename file stub_real_file
proc file {sub args} {
    if {$sub eq "copy"} {
        stub_record file_copy {*}[lrange $args end-1 end]
        return
    }
    return [stub_real_file $sub {*}$args]
}

# `exit` stops the script being sourced, with its status recorded.
rename exit stub_real_exit
proc exit {{status 0}} {
    stub_record exit $status
    error "stub-exit $status"
}

# Run a script: status 0 when it ends, its exit status when it calls exit, 99 on a Tcl error.
proc stub_run {script} {
    if {[catch {uplevel #0 [list source $script]} message]} {
        if {[string match "stub-exit *" $message]} {
            close $::stub_log
            stub_real_exit [lindex $message 1]
        }
        puts stderr "stub: $message"
        puts stderr $::errorInfo
        close $::stub_log
        stub_real_exit 99
    }
    close $::stub_log
    stub_real_exit 0
}
