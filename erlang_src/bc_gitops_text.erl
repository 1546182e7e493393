%%% @doc Human text for the command's output: lines wrapped to a width.
-module(bc_gitops_text).

-export([wrap/2]).

%% @doc `Line' in lines of at most `Width' columns: broken at spaces, the
%% lines after the first indented 4 more than it; a word too long for a
%% line is cut.
-spec wrap(string(), pos_integer()) -> [string()].
wrap(Line, Width) ->
    case string:length(Line) =< Width of
        true ->
            [Line];
        false ->
            %% Indents stay within half the width, so every line has room.
            Indent = lists:sublist(lists:takewhile(fun(C) -> C =:= $\s end, Line), Width div 2),
            Next = lists:duplicate(min(length(Indent) + 4, Width div 2), $\s),
            case string:lexemes(Line, " ") of
                [] -> [""];
                Words -> fill(Words, Indent, Next, Width, [])
            end
    end.

-spec fill([string()], string(), string(), pos_integer(), [string()]) -> [string()].
fill([], Current, _Next, _Width, Done) ->
    lists:reverse([Current | Done]);
fill([Word | Rest] = Words, Current, Next, Width, Done) ->
    Blank = string:trim(Current) =:= "",
    Candidate = case Blank of
                    true -> Current ++ Word;
                    false -> Current ++ " " ++ Word
                end,
    case string:length(Candidate) =< Width of
        true ->
            fill(Rest, Candidate, Next, Width, Done);
        false when Blank ->
            %% Alone on its line and still too long: cut it.
            Room = max(1, Width - string:length(Current)),
            fill([string:slice(Word, Room) | Rest], Next, Next, Width,
                 [Current ++ string:slice(Word, 0, Room) | Done]);
        false ->
            fill(Words, Next, Next, Width, [Current | Done])
    end.

