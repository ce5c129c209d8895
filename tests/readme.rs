//! The README is the user's guide: every command and option it names exists in `cascade --help`, and
//! every configuration key in its table is one the config file takes.

use clap::CommandFactory;
use std::collections::BTreeSet;

const README: &str = include_str!("../README.md");

/// The lines of the README's code block under `## Commands`.
fn command_lines() -> Vec<&'static str> {
    let section = README
        .split("\n## Commands")
        .nth(1)
        .expect("the README has a Commands section");
    let block = section
        .split("```")
        .nth(1)
        .expect("the Commands section has a code block");
    block
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("cascade "))
        .collect()
}

#[test]
fn every_command_and_option_in_the_readme_exists() {
    let cli = cascade::cli::Cli::command();
    let lines = command_lines();
    assert!(lines.len() >= 10, "{lines:?}");
    let mut named = BTreeSet::new();
    for line in lines {
        let mut words = line.split_whitespace().skip(1);
        let name = words.next().unwrap();
        named.insert(name.to_string());
        let sub = cli
            .find_subcommand(name)
            .unwrap_or_else(|| panic!("the README names `cascade {name}`, which does not exist"));
        let longs: BTreeSet<String> = sub
            .get_arguments()
            .chain(cli.get_arguments())
            .filter_map(|a| a.get_long().map(str::to_string))
            .collect();
        for word in words {
            let flag = word.trim_start_matches('[').trim_end_matches([']', '.']);
            if let Some(long) = flag.strip_prefix("--") {
                assert!(
                    longs.contains(long),
                    "the README gives `cascade {name} --{long}`; it takes {longs:?}"
                );
            }
        }
    }
    // And every command is in the README.
    for sub in cli.get_subcommands() {
        if sub.get_name() != "help" {
            assert!(
                named.contains(sub.get_name()),
                "`cascade {}` is missing from the README's commands",
                sub.get_name()
            );
        }
    }
}

#[test]
fn every_configuration_key_in_the_readme_is_taken_by_the_config() {
    let section = README
        .split("\n## Configuration")
        .nth(1)
        .expect("the README has a Configuration section");
    let table: Vec<&str> = section
        .lines()
        .skip_while(|l| !l.starts_with("| key"))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .collect();
    assert!(table.len() >= 15, "{table:?}");
    let source = include_str!("../src/config.rs");
    let mut keys = 0;
    for row in table {
        let first = row.split('|').nth(1).unwrap();
        // Every `section.key` (or `section.sub.key`) in backticks in the row's first cell.
        for key in first.split('`').skip(1).step_by(2) {
            if !key.contains('.') || key.contains(' ') || key.contains(':') {
                continue;
            }
            for field in key.split('.') {
                assert!(
                    source.contains(&format!("pub {field}:")),
                    "the README's key `{key}`: config.rs has no field `{field}`"
                );
            }
            keys += 1;
        }
    }
    assert!(keys >= 25, "{keys} keys checked");
}
