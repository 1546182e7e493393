%%% @doc Reads the app specs of a gitops checkout.
%%%
%%% Specs live in `<Root>/<AppsDir>/<app>/', in exactly one of `app.config'
%%% (Erlang terms, as `file:consult/1' reads them), `app.json', `app.yaml'
%%% or `app.yml' (YAML 1.2, one document, core schema; aliases, other tags
%%% and `.inf'/`.nan' are refused, never expanded). JSON and YAML strings
%%% become binaries, `true', `false' and `null' atoms. Parsing and
%%% validation run in the Rust NIF on a dirty IO scheduler. One broken spec
%%% never hides the others: every valid spec comes back together with every
%%% error and warning, each naming the file, the line (term and YAML files)
%%% and the field.
%%%
%%% Atoms are created only for specs that pass validation, so a repository
%%% full of junk cannot grow the atom table.
-module(bc_gitops_specs).

-include("bc_gitops.hrl").

-export([parse_dir/2, format_diagnostic/1]).

-export_type([diagnostic/0, parse_result/0]).

-type diagnostic() :: #{
    app := binary(),
    file := binary(),
    line := pos_integer() | undefined,
    field := binary(),
    kind := atom(),
    message := binary()
}.
%% An error or a warning about one app's spec. `app' is the directory name,
%% kept as a binary because it is not trusted. `field' is a dotted path such
%% as `<<"source.sha256">>', empty for the file as a whole. Error kinds:
%% `io | too_large | syntax | not_a_map | missing_field | wrong_type |
%% invalid_value | name_mismatch | duplicate_spec | symlink'. Warning kinds:
%% `unknown_key | no_spec_file | duplicate_dependency | unused_field |
%% abbreviated_commit'.

-type parse_result() :: #{
    specs := [#app_spec{}],
    errors := [diagnostic()],
    warnings := [diagnostic()]
}.

%% @doc Reads every spec under `Root/AppsDir'. Specs are sorted by name.
%% `{error, _}' only when the apps directory itself cannot be read (missing,
%% not a directory, outside the repository); a bad spec is never that.
-spec parse_dir(file:name_all(), file:name_all()) ->
    {ok, parse_result()}
    | {error, {apps_dir_outside | apps_dir_missing | apps_dir_not_dir | io, binary()}}.
parse_dir(Root, AppsDir) ->
    case bc_gitops_nif:parse_dir(to_binary(Root), to_binary(AppsDir)) of
        {ok, Specs, Errors, Warnings} ->
            {ok, #{specs => Specs, errors => Errors, warnings => Warnings}};
        {error, _} = Error ->
            Error
    end.

%% @doc One line for a log or a terminal: `file:line: field: message'.
-spec format_diagnostic(diagnostic()) -> binary().
format_diagnostic(#{file := File, line := Line, field := Field, message := Message}) ->
    Where =
        case Line of
            undefined -> File;
            _ -> [File, $:, integer_to_binary(Line)]
        end,
    What =
        case Field of
            <<>> -> [];
            _ -> [": ", Field]
        end,
    iolist_to_binary([Where, What, ": ", Message]).

-spec to_binary(file:name_all()) -> binary().
to_binary(Name) when is_binary(Name) -> Name;
to_binary(Name) -> unicode:characters_to_binary(filename:flatten(Name)).
